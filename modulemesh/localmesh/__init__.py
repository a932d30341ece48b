"""``modulemesh run``: the whole mesh of one graph as local processes on 127.0.0.1."""
