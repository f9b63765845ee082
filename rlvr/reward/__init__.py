"""Reward side: the verifier registry (`registry`) and the Ray reward pool (`pool`).

Kept empty so that importing `rlvr.reward.registry` during recipe validation stays cheap.
"""
