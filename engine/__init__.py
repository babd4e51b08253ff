"""loratui engine: everything that trains. Never imports textual or rich."""
