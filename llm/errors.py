class NpuboxError(Exception):
    """An error a user can act on. Its message is one or two sentences, shown without a traceback."""
