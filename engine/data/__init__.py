"""Dataset handling: image reading, captions, aspect-ratio buckets, the dataset scan and its report.

Nothing here imports torch: the scan and the report (`python -m engine check`) run before any model
is loaded, and the training code builds its batches from `scan.DatasetScan.items`.
"""
