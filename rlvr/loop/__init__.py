"""The training run: `train.py` sets it up (run folder, model, data, actor groups) and cleans up;
`loop.py` is the RL loop itself, one line per remote step, with checkpoints and the trainer's
recovery; `batches.py` hands it each step's batch (DAPO's extra rounds, async rollouts);
`samples.py` turns scored rollouts into training samples (pure); `control.py` carries out
pause / resume / checkpoint / stop requests and SIGTERM."""
