"""Error types shared by the readers and writers of ``bart_core`` (a leaf module: it imports nothing)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the file."""
