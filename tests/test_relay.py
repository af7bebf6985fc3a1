"""What of a generated reply reaches the speaker: its words as they come, not its tool calls,
not a recital of its instructions, not an earlier reply said again; and an interrupted reply
leaves nothing running."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from agent.profile import load_profile
from agent.relay import RecitedInstructions, RepeatedReply, relay_reply
from prompts import phrase

CALL_PROMPT = load_profile("call").instructions()
RECITAL_REPLY = phrase("repeat", "en")


class Worker:
    """A generation on its own thread, as the engines run one: it hands over its pieces (one
    per ``pace_s``, stopping once cancelled), then holds (as a long decode would) until it is
    cancelled or 5 s pass."""

    def __init__(
        self,
        pieces: list[str],
        *,
        hold: bool = False,
        pace_s: float = 0,
        fail: bool = False,
        instead: list[str] | None = None,
    ) -> None:
        self.pieces, self.hold, self.pace_s, self.fail = pieces, hold, pace_s, fail
        self.instead = instead
        """What it generates when asked to avoid a reply (the same pieces if None)."""
        self.avoided: list[str] = []
        self.cancelled, self.stopped = threading.Event(), threading.Event()
        self.handed = 0

    def start(self, on_text, avoid=""):
        pieces = self.pieces
        if avoid:
            self.avoided.append(avoid)
            pieces = self.pieces if self.instead is None else self.instead

        def run() -> int:
            for piece in pieces:
                if self.cancelled.wait(self.pace_s):
                    break
                on_text(piece)
                self.handed += 1
            if self.hold:
                self.cancelled.wait(5)
            self.stopped.set()
            if self.fail:
                raise RuntimeError("out of memory")
            return self.handed

        return asyncio.get_running_loop().run_in_executor(None, run)


async def relay(
    worker: Worker,
    said: list[str],
    errors: list[ValueError],
    offered=(),
    language="en",
    earlier=(),
):
    return await relay_reply(
        worker.start,
        said.append,
        cancelled=worker.cancelled,
        offered=set(offered),
        own_words=CALL_PROMPT,
        language=language,
        on_malformed=errors.append,
        earlier=earlier,
    )


def word_pieces(text: str) -> list[str]:
    """Text as a tokenizer streams it: a word and its leading space at a time."""
    words = text.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


async def test_a_reply_is_spoken_in_order_and_its_tool_call_comes_back():
    said, errors = [], []
    worker = Worker(["It is ", "late. ", '<tool_call>{"name": "get_time", ', '"arguments": {}}'])
    count, calls = await relay(worker, said, errors, offered={"get_time"})
    assert (count, "".join(said), [c.name for c in calls]) == (4, "It is late. ", ["get_time"])
    assert errors == []


@pytest.mark.parametrize(
    "answer",
    [
        "I can tell you the current time or date.",
        "Sorry, I did not catch that. Could you repeat it?",
        "The time is ten past four.",
    ],
)
async def test_answers_that_share_a_few_words_with_the_prompt_are_spoken_whole(answer):
    said, errors = [], []
    worker = Worker(word_pieces(answer))
    await relay(worker, said, errors)
    assert ("".join(said), errors) == (answer, [])
    assert all(len(piece.split()) <= 6 for piece in said), "words are not held to the end"


async def test_a_recital_of_the_prompt_is_cut_off_and_the_caller_asked_to_repeat():
    recital = (
        "Sure. Answer in one short sentence of plain spoken words: no lists, no markdown, "
        "no emoji, no code. Always answer in the language the caller last spoke."
    )
    said, errors = [], []
    worker = Worker(word_pieces(recital), pace_s=0.05)
    await relay(worker, said, errors)
    assert "".join(said) == f"Sure. {RECITAL_REPLY}", "what came before it was spoken"
    assert [type(e) for e in errors] == [RecitedInstructions]
    assert worker.stopped.is_set() and worker.handed < len(word_pieces(recital))


async def test_a_greeting_said_again_is_cut_off_as_a_sentence_of_its_own():
    """The profile's greeting counts as the agent's own words: said again in answer to a
    fragment, it taught the 0.5B model to answer every later question with it."""
    said, errors = [], []
    greeting = load_profile("call").greeting  # "Hello, thanks for calling. How can I help?"
    worker = Worker(word_pieces("Hello, thank you for calling. How can I help?"), pace_s=0.02)
    await relay_reply(
        worker.start,
        said.append,
        cancelled=worker.cancelled,
        offered=set(),
        own_words=f"{CALL_PROMPT}\n{greeting}",
        language="en",
        on_malformed=errors.append,
    )
    assert "".join(said) == f"Hello, thank you. {RECITAL_REPLY}"
    assert [type(e) for e in errors] == [RecitedInstructions]


async def test_a_recital_that_ends_the_reply_is_caught_too():
    said, errors = [], []
    await relay(Worker(["Use a tool whenever the answer depends"]), said, errors)
    assert "".join(said) == RECITAL_REPLY
    assert [type(e) for e in errors] == [RecitedInstructions]


PARIS = "The capital of France is Paris."


@pytest.mark.parametrize(
    ("reply", "earlier"),
    [
        (PARIS, PARIS),
        # the clock's answer, a minute on, in the model's own words: a time it made up
        (
            "It is 16:09 UTC, on Sunday 06 December 2026.",
            "It is 16:08 UTC, on Sunday 06 December 2026.",
        ),
        # the calculator's words with a sum no tool did
        ("That makes 32.", "That makes 391."),
    ],
)
async def test_an_earlier_reply_said_again_is_generated_anew_without_a_word_of_it_spoken(
    reply, earlier
):
    said, errors = [], []
    worker = Worker(word_pieces(reply), instead=word_pieces("Rome is the capital of Italy."))
    await relay(worker, said, errors, earlier=["Hello, how can I help?", earlier])
    assert "".join(said) == "Rome is the capital of Italy."
    assert worker.avoided == [reply], "the model is told how not to begin"
    assert [type(e) for e in errors] == [RepeatedReply]


async def test_a_reply_said_again_after_it_was_avoided_becomes_an_apology():
    said, errors = [], []
    await relay(Worker(word_pieces(PARIS)), said, errors, earlier=[PARIS], language="de")
    assert "".join(said) == phrase("repeat", "de")
    assert [type(e) for e in errors] == [RepeatedReply, RepeatedReply]


@pytest.mark.parametrize(
    ("reply", "earlier"),
    [
        ("The capital of Germany is Berlin.", PARIS),  # begins as it did, then goes its way
        ("You're welcome!", "You're welcome!"),  # too short to be a loop
        ("A cat has 4 legs.", "A spider has 8 legs."),  # a number in words of its own
        ("Sure. The capital of France is Paris.", PARIS),  # not from its start
    ],
)
async def test_replies_that_are_not_a_loop_are_spoken_as_they_come(reply, earlier):
    said, errors = [], []
    worker = Worker(word_pieces(reply))
    await relay(worker, said, errors, earlier=[earlier])
    assert ("".join(said), errors, worker.avoided) == (reply, [], [])


@pytest.mark.parametrize(
    ("language", "reply", "apology_"),
    [
        ("es-ES", "Use a tool whenever the answer depends on live information", "repeat"),
        ("de", '<tool_call>{"name": "country", "arguments": {}}</tool_call>', "failed"),
        ("sv", "Use a tool whenever the answer depends on live information", "repeat"),
    ],
)
async def test_an_apology_is_said_in_the_callers_language(language, reply, apology_):
    """Spanish and German have their own; Swedish, which the apologies lack, gets English."""
    said, errors = [], []
    await relay(Worker([reply]), said, errors, offered={"get_time"}, language=language)
    assert "".join(said) == phrase(apology_, language) and len(errors) == 1
    assert phrase(apology_, "sv") == phrase(apology_, "en")


@pytest.mark.parametrize("fail", [False, True], ids=["stops", "fails"])
async def test_an_abandoned_reply_stops_its_worker_and_leaves_no_task_behind(fail, caplog):
    """An interruption cancels the reply: decoding stops, and nothing the relay started is
    left pending or unread (asyncio would report it as destroyed while pending, or its error
    as never retrieved); a generation that fails after it is logged in one line."""
    said, errors, reported = [], [], []
    asyncio.get_running_loop().set_exception_handler(lambda _, c: reported.append(c["message"]))
    worker = Worker(["word. "] * 3, hold=True, fail=fail)
    reply = asyncio.create_task(relay(worker, said, errors))
    while len(said) < 3:
        await asyncio.sleep(0.01)
    reply.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reply
    assert await asyncio.to_thread(worker.stopped.wait, 1)
    await asyncio.sleep(0.05)  # the worker's future settles
    gc.collect()  # a forgotten task is found here, destroyed while pending
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert reported == []
    failures = [r.getMessage() for r in caplog.records if "abandoned" in r.getMessage()]
    assert failures == (["an abandoned reply's generation failed: out of memory"] if fail else [])


async def test_the_language_a_turn_was_heard_in_reaches_the_language_model():
    """The recognizer tells each turn's language; the session hands it to the voice and to
    the language model, whose apologies are said in it."""
    from livekit.agents import UserInputTranscribedEvent

    from agent.session import SessionFactory

    factory = await SessionFactory.load(load_profile("call"))
    try:
        session, _ = factory.session()
        assert session.llm.language == "en", "the voice's language until the caller is heard"
        heard = UserInputTranscribedEvent(transcript="¿Qué hora es?", is_final=True, language="es")
        session.emit("user_input_transcribed", heard)
        assert session.llm.language == "es"
    finally:
        await factory.aclose()
