"""Models rlvr builds or writes: the built-in tiny model (`tiny`), tiny random models of every
architecture family it is checked on (`families`), and a checkpoint as a standalone model
folder (`export`)."""
