"""Files: atomic checksummed storage, job checkpoints and their background writer, tensors on device/host/disk, the results record, what identifies a result, and where things live."""
