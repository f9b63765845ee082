"""`rlvr convert`: ms-swift (`swift rlhf --rlhf_type grpo ...`) and TRL (`GRPOConfig` YAML) settings
as an rlvr recipe.

    grpo.py   the settings (TRL's names) -> recipe keys, one mapper per group, and `Conversion`
    build.py  the whole conversion, the batch arithmetic, the GPUs, and the commented YAML
    swift.py  a `swift rlhf` command line -> settings
    trl.py    a TRL config YAML (GRPOConfig fields, plus TRL's script/model arguments) -> settings
"""
