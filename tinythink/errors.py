"""Errors that reach the user as one clear line, never as a traceback from deep inside a library."""


class TinythinkError(Exception):
    """An error whose message alone tells the user what went wrong."""


class ModelFileError(TinythinkError):
    """A model file or directory that is missing, truncated, corrupt or unsupported."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")
