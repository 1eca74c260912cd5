"""A prompt is tokenized as llama.cpp's tools tokenize it (common_tokenize with add_special = true):
a vocabulary that asks for a BOS (tokenizer.ggml.add_bos_token, Gemma's and Llama's) gets one, and
one that does not (Qwen's, SmolLM2's) gets none. Without it a trained Gemma degenerates into
repeating a line, and its runs would not be llama-speculative-simple's."""

from __future__ import annotations

from specsweep.engine import runtime
from specsweep.matrix.prompts import Prompt
from specsweep.run.runner import prompt_tokens

PROMPT = Prompt("test", "p", "chat", "def main(argv=None):")


def test_a_prompt_gets_a_bos_only_where_the_vocabulary_asks_for_one(tiny_model):
    path = tiny_model("qwen3-0.6b")
    with runtime.Model(path, (), vocab_only=True) as plain:
        bos = int(plain.meta("tokenizer.ggml.bos_token_id"))
        text = plain.tokenize(PROMPT.text)
        assert prompt_tokens(plain, PROMPT, chat=False) == text  # add_bos_token false: as written
        assert bos not in text
    with runtime.Model(path, (), vocab_only=True, override_kv=["tokenizer.ggml.add_bos_token=bool:true"]) as asks:
        assert prompt_tokens(asks, PROMPT, chat=False) == [bos, *text]
        chat = prompt_tokens(asks, PROMPT, chat=True)  # the template's text, then the same rule
        assert chat[0] == bos and chat[1:] == asks.tokenize(asks.chat_prompt(PROMPT.text))
