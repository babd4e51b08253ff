"""Collect training images from a ComfyUI server: the `collect` step of a run and `loratui collect`.

Modules, one job each:

- `settings`: the [collect] section resolved for one collect (environment overrides, mode, prompts);
- `workflow`: reading an API-format workflow, checking the node map, injecting prompt/seed/image;
- `client`: ComfyUI's HTTP and websocket API (requests + websocket-client), errors made readable;
- `store`: downloaded files written atomically under content-hash names, de-duplicated, with the
  prompt beside each image, and the record of finished submissions that makes collect resumable;
- `run`: one collect from start to end, with `phase` progress events;
- `probe`: the "Test connection" check (server, mapped nodes, their object info);
- `cli`: `python -m engine collect RUN.toml`.

Nothing here imports torch: collect runs before any model is loaded.
"""
