"""The built-in tiny tool-using model (`model.path: builtin:tiny-tools`), built locally and cached
like `builtin:tiny` (`rlvr.models.tiny`: same model shape, same deterministic warm start).

The task is `builtin:tool-arithmetic`: `a*b=` (a 3-digit number times a 2-digit one by
default). A 0.6M-parameter model cannot multiply, but it can copy: the episode it learns is

    user:       482*37=
    assistant:  <tool_call>\\n{"name": "calc", "arguments": {"expression": "482*37"}}\\n</tool_call>
    tool:       17834
    assistant:  17834

in the Qwen2.5 / Hermes tool-call format, rendered by a chat template that takes `tools=`
as Qwen's does (`TOOLS_TEMPLATE`: the tools' JSON schemas in the system turn, `tool`
messages as `<tool_response>` in a user turn, an assistant message's `tool_calls` as Qwen2.5 writes
them, for agents that send their history back through the OpenAI-compatible endpoint). Tokenizer: the same byte-level BPE recipe
as `builtin:tiny` (digits one token each), trained on generated episodes of this task. Its
words are split as Qwen2's are: transformers loads any Qwen2-architecture folder's tokenizer
as `Qwen2Tokenizer`, which applies Qwen2's own split (measured: a tokenizer that merged
across spaces was loaded back splitting at words, and the model saw other tokens than it
was trained on).

Warm start: a short SFT on such episodes, built token by token exactly as multi-turn
rollouts build them (`rlvr.data.prompts.observation_tokens` for the tool turn), with loss
on the assistant turns only. On problems whose second factor is below
`data.tool_arithmetic.direct_below` (55), most episodes (`direct_fraction`, 80%) answer
at once without the tool, as a model that has not learned when to use its tools would: the
warm model calls the tool on about half of the problems and guesses (wrong) on the rest,
and RL has two things to learn, calling the tool everywhere and copying its result. SFT
stops once the greedy episodes that call the tool get `model.tiny.sft_target_accuracy` of
their answers right (a fixed probe of train rows, the `calc` tool run in-process).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict

from rlvr.config import DataConfig, ModelConfig, ToolArithmeticConfig
from rlvr.models.tiny import EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, ensure_tiny_model, greedy_tokens

TOOLS_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and loop.first %}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for call in message['tool_calls'] %}"
    "{%- if call['function'] is defined %}{%- set call = call['function'] %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' + call['arguments'] | tojson + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
VOCAB_SIZE = 512
PROBE_SIZE = 256
TURN_TOKENS = 48  # greedy tokens per turn in the probe (a call is ~40)


def calc_schemas() -> list[dict]:
    from rlvr.tools.builtin import Calc
    from rlvr.tools.calls import tool_schema

    return [tool_schema(Calc)]


def call_text(expression: str) -> str:
    """An assistant turn calling `calc`, as Qwen2.5 writes one."""
    return "<tool_call>\n" + json.dumps({"name": "calc", "arguments": {"expression": expression}}) + "\n</tool_call>"


def _corpus(cfg: ToolArithmeticConfig, n: int = 3000, seed: int = 0):
    """Generated text for the tokenizer: whole rendered episodes with random operands."""
    from rlvr.models.tiny import build_tokenizer

    plain = build_tokenizer()  # only for its template engine (the corpus is text)
    plain.chat_template = TOOLS_TEMPLATE
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randint(cfg.min_a, cfg.max_a), rng.randint(cfg.min_b, cfg.max_b)
        messages = [{"role": "user", "content": f"{a}*{b}="}, {"role": "assistant", "content": call_text(f"{a}*{b}")},
                    {"role": "tool", "content": str(a * b)}, {"role": "assistant", "content": str(a * b)}]
        if b < cfg.direct_below and rng.random() < cfg.direct_fraction:
            messages = [messages[0], messages[3]]
        yield plain.apply_chat_template(messages, tools=calc_schemas(), tokenize=False)


class ToolTask:
    """The builder's task for `builtin:tiny-tools` (see `rlvr.models.tiny.ArithmeticTask`)."""

    prefix = "tiny-tools"

    def __init__(self, cfg: ToolArithmeticConfig):
        self.cfg = cfg

    def key(self) -> dict:
        return {"tool_arithmetic": asdict(self.cfg), "template": TOOLS_TEMPLATE}

    def tokenizer(self, out_dir: str | None = None):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(_corpus(self.cfg), trainer=trainer)
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                     additional_special_tokens=["<|im_start|>"], model_max_length=1024)
        hf.chat_template = TOOLS_TEMPLATE
        if out_dir is not None:
            hf.save_pretrained(out_dir)
        return hf

    def sft_data(self, tokenizer):
        """Episodes of train rows, token by token as rollouts build them; labels on the turns."""
        import torch

        from rlvr.data.prompts import observation_tokens, render_prompts
        from rlvr.data.rows import tool_arithmetic_rows

        rows = tool_arithmetic_rows(self.cfg, "train")
        prompts = render_prompts(rows, tokenizer, DataConfig(), calc_schemas())
        eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        kw = {"tools": calc_schemas()}
        direct = random.Random(self.cfg.seed + 1)
        seqs, label_seqs = [], []
        for row, p in zip(rows, prompts):
            answer = tokenizer(p.answer, add_special_tokens=False)["input_ids"] + [eos]
            if row["metadata"]["b"] < self.cfg.direct_below and direct.random() < self.cfg.direct_fraction:
                seqs.append(p.token_ids + answer)
                label_seqs.append([-100] * len(p.token_ids) + answer)
                continue
            expression = f"{row['metadata']['a']}*{row['metadata']['b']}"
            call = tokenizer(call_text(expression), add_special_tokens=False)["input_ids"] + [eos]
            obs = observation_tokens(tokenizer, [{"role": "tool", "content": p.answer}], EOS_TOKEN, kw)
            seqs.append(p.token_ids + call + obs + answer)
            label_seqs.append([-100] * len(p.token_ids) + call + [-100] * len(obs) + answer)
        width = max(len(s) for s in seqs)
        input_ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs], dtype=torch.long)
        labels = torch.tensor([s + [-100] * (width - len(s)) for s in label_seqs], dtype=torch.long)
        probe = prompts[:PROBE_SIZE]  # rows are drawn at random: a fixed random sample
        return input_ids, labels, lambda model: episode_accuracy(model, tokenizer, probe)


def episode_accuracy(model, tokenizer, prompts) -> float:
    """Greedy two-turn episodes in this process (transformers, the `calc` tool run directly):
    of those whose first turn is a `calc` call, the share whose final answer is the product."""
    from rlvr.data.prompts import observation_tokens
    from rlvr.tools.builtin import Calc
    from rlvr.tools.calls import parse_hermes

    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    first = greedy_tokens(model, tokenizer, [p.token_ids for p in prompts], TURN_TOKENS)
    follow, index = [], []
    for i, (p, ids) in enumerate(zip(prompts, first)):
        calls = parse_hermes(tokenizer.decode(ids, skip_special_tokens=True))
        if len(calls) != 1 or calls[0].name != "calc" or "expression" not in calls[0].arguments:
            continue
        try:
            result = Calc()(expression=str(calls[0].arguments["expression"]))
        except ValueError as e:
            result = f"error: {e}"
        obs = observation_tokens(tokenizer, [{"role": "tool", "content": result}], EOS_TOKEN, {"tools": calc_schemas()})
        follow.append(p.token_ids + ids + [eos] + obs)
        index.append(i)
    if len(follow) < len(prompts) // 8:  # too few calls to judge the copying by
        return 0.0
    answers = greedy_tokens(model, tokenizer, follow, 12)
    right = sum(tokenizer.decode(a, skip_special_tokens=True).strip() == prompts[i].answer for i, a in zip(index, answers))
    return right / max(1, len(follow))


def ensure_tiny_tools_model(model_cfg: ModelConfig, cfg: ToolArithmeticConfig, progress: bool = True) -> str:
    """The cached `builtin:tiny-tools` folder for these configs, built once if absent."""
    return ensure_tiny_model(model_cfg, ToolTask(cfg), progress)
