"""Train any agent: an OpenAI-compatible endpoint served from the rollout engines
(`rlvr.agent.endpoint`, request fields in `rlvr.agent.protocol`), every call of an episode
captured token-exactly (`rlvr.agent.board`), agents run in worker actors or outside the run
(`rlvr.agent.workers`), and a batch's episodes scored and turned into samples
(`rlvr.agent.runner`). Nothing is imported here: importing `rlvr` stays cheap."""
