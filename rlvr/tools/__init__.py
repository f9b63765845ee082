"""Tools and environments of multi-turn episodes (`rollout.multi_turn`): reading tool calls
from a turn (`calls`), the built-in tools (`builtin`: `calc`, `python`), the environment
interface and its default (`env`), the tool worker that runs calls in a child process under
a hard timeout (`worker`) and the group of them a run uses (`group`). The turn loop itself
is `rlvr.rollout.episodes`."""
