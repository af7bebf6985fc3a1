"""Prompts come out exactly in the model card's formats (microsoft/Phi-4-multimodal-instruct,
"Input Formats"); the card's examples are quoted byte for byte."""

from __future__ import annotations

import numpy as np
from livekit.agents import function_tool, llm
from PIL import Image

from agent.engines.phi4mm.engine import ASR_PROMPT
from agent.engines.phi4mm.parts import Media
from agent.engines.phi4mm.prompt import card_tools, prompt_text, render

CARD_CHAT = (
    "<|system|>You are a helpful assistant.<|end|><|user|>How to explain Internet for a medieval "
    "knight?<|end|><|assistant|>"
)
CARD_TOOLS = (
    '<|system|>You are a helpful assistant with some tools.<|tool|>[{"name": '
    '"get_weather_updates", "description": "Fetches weather updates for a given city using the '
    'RapidAPI Weather API.", "parameters": {"city": {"description": "The name of the city for '
    'which to retrieve weather information.", "type": "str", "default": "London"}}}]<|/tool|>'
    "<|end|><|user|>What is the weather like in Paris today?<|end|><|assistant|>"
)
CARD_ASR = "<|user|><|audio_1|>Transcribe the audio clip into text.<|end|><|assistant|>"
CARD_SPOKEN_QA = "<|user|><|audio_1|><|end|><|assistant|>"
CARD_VISION_SPEECH = "<|user|><|image_1|><|audio_1|><|end|><|assistant|>"

CLIP = np.zeros(16000, np.int16)
IMAGE = Image.new("RGB", (64, 48))


@function_tool
async def get_weather_updates(city: str = "London") -> str:
    """Fetches weather updates for a given city using the RapidAPI Weather API.

    Args:
        city: The name of the city for which to retrieve weather information.
    """
    return "sunny"


def conversation(*messages: tuple[str, str]) -> llm.ChatContext:
    ctx = llm.ChatContext()
    for role, text in messages:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    return ctx


def test_text_chat_format():
    ctx = conversation(("user", "How to explain Internet for a medieval knight?"))
    assert (
        prompt_text(render("You are a helpful assistant.", [], ctx.items, lambda _: ()))
        == CARD_CHAT
    )


def test_tool_enabled_format_from_a_livekit_function_tool():
    ctx = conversation(("user", "What is the weather like in Paris today?"))
    tools = card_tools([get_weather_updates])
    text = prompt_text(
        render("You are a helpful assistant with some tools.", tools, ctx.items, lambda _: ())
    )
    assert text == CARD_TOOLS


def test_spoken_question_and_vision_speech_formats():
    ctx = conversation(("user", "(transcript is not read)"))
    turn = ctx.items[0].id
    spoken = render("", [], ctx.items, lambda _: (Media("a", audio=CLIP),))
    assert prompt_text(spoken) == CARD_SPOKEN_QA
    both = render("", [], ctx.items, lambda _: (Media("i", image=IMAGE), Media("a", audio=CLIP)))
    assert prompt_text(both) == CARD_VISION_SPEECH
    assert [m.key for m in both[0].media] == ["i", "a"] and turn


def test_asr_prompt_is_the_cards():
    assert f"<|user|><|audio_1|>{ASR_PROMPT}<|end|><|assistant|>" == CARD_ASR


def test_a_multi_turn_conversation_numbers_media_and_keeps_tool_history():
    ctx = conversation(("user", "first"), ("assistant", "Hello."), ("user", "second"))
    ctx.insert(llm.FunctionCall(call_id="c1", name="get_time", arguments='{"timezone": "UTC"}'))
    ctx.insert(
        llm.FunctionCallOutput(call_id="c1", name="get_time", output="10:00", is_error=False)
    )
    clips = {
        ctx.items[0].id: (Media("a1", audio=CLIP),),
        ctx.items[2].id: (Media("a2", audio=CLIP),),
    }
    parts = render("Be brief.", [], ctx.items, lambda i: clips.get(i, ()))
    assert prompt_text(parts) == (
        "<|system|>Be brief.<|end|>"
        "<|user|><|audio_1|><|end|><|assistant|>Hello.<|end|>"
        "<|user|><|audio_2|><|end|>"
        '<|assistant|><|tool_call|>[{"name": "get_time", "arguments": {"timezone": "UTC"}}]'
        "<|/tool_call|><|end|>"
        "<|tool|>10:00<|end|>"
        "<|assistant|>"
    )
    # one part per turn, so each turn's audio is encoded on its own
    assert [len(p.media) for p in parts] == [0, 1, 0, 1, 0, 0, 0]
