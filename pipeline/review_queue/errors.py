"""The review queue's one error: what stops a command, said in one line."""


class ReviewError(Exception):
    """The review queue cannot go on (one clear line for the user)."""
