"""WD14 auto-captioning: run a SmilingWolf tagger (model.onnx + selected_tags.csv) with onnxruntime.

Modules, one job each: `labels` reads selected_tags.csv, `model` opens the ONNX session and reads the
input layout from the model, `preprocess` turns an image file into the tagger's input, `tags` turns
probabilities into caption text, `run` captions a dataset folder, `cli` is `python -m engine caption`.
The toy tagger of the tests and benchmarks is tests/tiny_tagger.py.

onnxruntime is imported only when a model is opened, so `engine.tagger` itself stays cheap to import.
"""
