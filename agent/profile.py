"""Profiles: everything a session needs, in one TOML file per use (desktop, kiosk, …)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audio.language import base_language
from prompts import load_prompt, read_prompt_file

from .engines import ENGINES


class ProfileError(ValueError):
    """The profile named or given cannot be used; the message is meant for the user."""


class _Section(BaseModel):
    # every number has a documented range; TOML's nan and inf are never one
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VADSettings(_Section):
    aggressiveness: int = Field(3, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 30
    min_speech_s: float = Field(0.1, ge=0, le=2)
    min_silence_s: float = Field(0.3, ge=0, le=5)
    padding_s: float = Field(0.3, ge=0, le=2)
    high_pass: bool = False
    """Judge speech without rumble below ~80 Hz (audio/segmenter.py says why it is off unless
    asked; the DC offset is removed either way)."""
    denoise: bool = False
    """Judge speech with steady noise suppressed (the recognizer hears the audio as it came)."""


class EndpointingSettings(_Section):
    turn_detector: Literal["smart-turn", "vad"] = "smart-turn"
    """"smart-turn": an end-of-turn model on the audio picks min_delay (the turn sounds
    finished) or max_delay; "vad": always min_delay after the VAD's end of speech."""
    min_delay: float = Field(0.5, ge=0, le=10)
    max_delay: float = Field(3.0, ge=0, le=30)


class InterruptionSettings(_Section):
    enabled: bool = True
    min_duration: float = Field(0.5, ge=0, le=10)
    resume_false_interruption: bool = True
    false_interruption_timeout: float = Field(2.0, ge=0, le=30)


class VoiceSettings(_Section):
    language: str = "en"
    rate: int = Field(175, ge=80, le=450)
    languages: list[str] = []
    """Languages the voice may switch to: each reply is spoken in its own language, told
    from its text ([] = always ``language``)."""
    english: Literal["piper", "espeak"] = "piper"
    """Who speaks English: Piper's neural voice, or espeak-ng as every other language."""


class LiteEngineSettings(_Section):
    stt_model: str = ""
    """"" = the bundled tiny.en; ``base``: the bundled multilingual Whisper base; or a
    faster-whisper size in the local cache, or a CTranslate2 folder."""
    stt_language: str = "en"
    """"" = told apart on each turn (needs a multilingual model)."""
    stt_languages: list[str] = []
    """With stt_language "": what a turn may be heard as ([] = any language Whisper knows)."""

    @field_validator("stt_languages")
    @classmethod
    def _whisper_knows(cls, codes: list[str]) -> list[str]:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        codes = [base_language(code) for code in codes]
        if unknown := [code for code in codes if code not in _LANGUAGE_CODES]:
            raise ValueError(f"Whisper knows no language {', '.join(map(repr, unknown))}")
        return codes

    stt_beam_size: int = Field(5, ge=1, le=10)
    """Whisper's beam: 5 hears the benchmark's spoken requests with a WER of 0.105 against
    greedy decoding's 0.141 on tiny.en, for 0.04 s more a turn (bench/beam.py)."""
    llm_model: str = ""
    """"" = the bundled Qwen2.5-Coder-1.5B where it is installed and the machine has the
    cores for it, else the bundled 0.5B (agent/models.py)."""
    llm_gguf_file: str = ""
    llm_runtime: Literal["llama.cpp", "transformers"] = "llama.cpp"
    """llama.cpp runs a GGUF as it is (5–6× faster here); transformers runs any HF model."""
    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    repetition_penalty: float = Field(1.05, ge=1.0, le=2)
    preemptive_generation: bool = True
    tool_reminder: str = ""
    """Added to each user turn after the model's first reply, when tools are offered: after a
    reply in words a 0.5 B model stops calling its tools (bench/tools.py); reminded, it also
    calls tools nothing asked for, so only a profile made for its tools (the kiosk) sets it."""
    intents: bool = True
    """Match the user's words against sentence templates (Home Assistant's and ours) before
    the model: the time, the date, timers, devices, sums, units and what only the internet
    knows are carried out at once by the tools (English)."""
    tool_answers: Literal["tool", "model"] = "tool"
    """Who words the answer after a tool call: "tool" speaks the tool's own sentence (a model
    under 1 B garbles or repeats the call instead: bench/tools.py), "model" lets it relay."""


class Phi4MMSettings(_Section):
    model: str = "microsoft/Phi-4-multimodal-instruct"
    """Hub id (looked up in the local Hugging Face cache) or a checkpoint folder."""
    revision: str = "refs/pr/70"
    device: str = "auto"
    """auto: CUDA in bf16 when there is a GPU, else the CPU in fp32."""
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    max_new_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    kv_cache_gib: float = Field(32.0, gt=0)
    """All conversations' KV caches together (bf16: 128 KiB a token, 16 GiB for 128K); the
    least recently used is dropped beyond it and prefilled again when needed."""


class RemoteSettings(_Section):
    base_url: list[str] = ["http://127.0.0.1:8000/v1"]
    """One OpenAI-compatible server (vLLM, llama.cpp's, Ollama…) or several replicas of one:
    each conversation stays on one replica while it answers."""
    model: str = ""
    """The model's name on the servers ("" = the first one each lists at /v1/models)."""
    mode: Literal["text", "audio"] = "text"
    """"text": the ``[lite]`` recognizer hears, the server's model reads the words. "audio":
    Phi-4-multimodal on the server hears each turn's audio and sees its frames."""
    adapters: dict[str, str] = {"speech": "speech", "vision": "vision"}
    """Audio mode: the LoRA modules' names on the server (``vllm serve --lora-modules``) for
    the adapter a request's media pick; a request without media goes to ``model``."""
    max_audio_clips: int = Field(32, ge=1, le=1024)
    """Audio mode: the most turns' audio a request carries (the server's
    ``--limit-mm-per-prompt``); older turns are read as their transcripts."""
    api_key_env: str = "VOICE_AGENT_API_KEY"
    """The environment variable holding the servers' key (unset: no key is sent)."""
    max_new_tokens: int = Field(96, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    context_tokens: int = Field(0, ge=0, le=1 << 20)
    """The server's window; 0 = as the server says (vLLM, llama.cpp's llama-server), else
    4,096."""
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    first_token_timeout_s: float = Field(20.0, gt=0, le=600)
    """A replica silent this long is taken for dead and the turn sent to another."""
    health_interval_s: float = Field(5.0, gt=0, le=600)
    """How often a replica taken for dead is asked whether it is back."""

    @field_validator("adapters")
    @classmethod
    def _known_adapters(cls, adapters: dict[str, str]) -> dict[str, str]:
        if unknown := set(adapters) - {"speech", "vision"}:
            raise ValueError(f"no adapter {sorted(unknown)[0]!r} (speech, vision)")
        return adapters

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_several(cls, urls: object) -> object:
        return [urls] if isinstance(urls, str) else urls

    @field_validator("base_url")
    @classmethod
    def _http(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("name at least one server")
        if bad := [url for url in urls if not url.startswith(("http://", "https://"))]:
            raise ValueError(f"not an http(s) URL: {bad[0]!r}")
        return [url.rstrip("/") for url in urls]


class ContextSettings(_Section):
    max_tokens: int = Field(0, ge=0, le=1 << 20)
    """The conversation's window; 0 = the model's own (Qwen2.5-Coder-0.5B: 32,768,
    Phi-4-multimodal: 131,072)."""
    trigger: float = Field(0.8, gt=0, le=1)
    """Trim once the next request, with room for the reply, would pass this share."""
    target: float = Field(0.5, gt=0, lt=1)
    """…down to this share, in one step."""

    @model_validator(mode="after")
    def _target_below_trigger(self) -> ContextSettings:
        if self.target >= self.trigger:
            raise ValueError("target must be below trigger")
        return self


class VisionSettings(_Section):
    speaking_fps: float = Field(1.0, ge=0, le=30)
    """Frames looked at per second while the user speaks (LiveKit's rate)…"""
    silent_fps: float = Field(0.3, ge=0, le=30)
    """…and while the user is silent."""
    change_threshold: float = Field(0.03, ge=0, le=1)
    """A frame is kept only if its grey thumbnail differs this much (0–1) from the last kept."""
    max_side: int = Field(448, ge=64, le=4096)
    """Frames are scaled down to fit: 448 px is one crop (477 tokens at 4:3; 640x480: 1,065)."""
    camera_fallback: Literal["error", "audio-only"] = "error"
    """A camera that cannot be opened: refuse to start, or go on by voice alone."""


class CallSettings(_Section):
    max_s: float = Field(0, ge=0, le=24 * 3600)
    """A conversation's longest: then ``goodbye`` is said and the call hung up (0 = none)."""
    goodbye: str = "I have to end the call now. Goodbye."
    media_timeout_s: float = Field(30, ge=5, le=3600)
    """A caller who sends no audio this long (a vanished browser, a phone gone silent without
    BYE, silence suppression past it) is hung up."""
    transfer_to: str = ""
    """Where ``transfer_call`` sends a phone caller: a SIP URI, or a number dialled at the
    host the call came from ("" = no transfers)."""
    record: bool = False
    """Each phone call's stereo WAV (caller left, agent right) beside its events under
    ``serve --log-dir``, written as the call goes; ``record_notice`` is said first."""
    record_notice: str = "This call is recorded."


class SipSettings(_Section):
    """The agent as an extension of a PBX (agent/transports/sip_extension.py)."""

    registrar: str = ""
    """HOST[:PORT] the agent registers with, and whose proxy sends it calls ("" = none: calls
    come straight to ``serve --sip``'s address)."""
    domain: str = ""
    """The extension's domain, ``sip:USER@DOMAIN`` ("" = the registrar's host)."""
    user: str = "agent"
    password_env: str = "VOICE_AGENT_SIP_PASSWORD"
    """The environment variable holding the extension's password (never logged)."""
    password_file: str = ""
    """Or a file holding it (read at start; wins over ``password_env``)."""
    expires: int = Field(300, ge=10, le=86400)
    """Seconds each registration asks for; it is renewed at nine tenths of what is granted."""
    authenticate_calls: bool = False
    """Calls must answer a digest challenge with ``user`` and the password (else only
    ``--sip-allow``'s addresses are trusted)."""


class ConsoleSettings(_Section):
    """WebRTC's audio processing on the console's microphone (audio/sound_card.py)."""

    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain_control: bool = True


class AddressingSettings(_Section):
    """How the assistant knows that speech is for it (agent/addressing.py)."""

    mode: Literal["always", "wake_phrase", "push_to_talk"] = "always"
    """"always": every turn is for it; "wake_phrase": a turn that begins with one of
    ``wake_phrases``; "push_to_talk": turns after the console's Enter key, MQTT ``cmd/listen``
    or the browser's Talk button."""
    wake_phrases: list[str] = ["hey computer"]
    """Said before the request, in the same breath or alone (then it answers "Yes?")."""
    listen_s: float = Field(8.0, ge=1, le=600)
    """Once addressed, follow-ups need no wake phrase until this long has passed in silence
    after its reply."""

    @field_validator("wake_phrases")
    @classmethod
    def _some_words(cls, phrases: list[str]) -> list[str]:
        if not phrases or not all(any(c.isalnum() for c in p) for p in phrases):
            raise ValueError("give at least one wake phrase, each with a word in it")
        return phrases


class MqttSection(_Section):
    enabled: bool = False
    url: str = "mqtt://127.0.0.1:1883"
    """mqtt:// or mqtts://; credentials come from MQTT_USERNAME / MQTT_PASSWORD."""
    device_id: str = "voice-agent"
    prefix: str = "voice-agent"


class Profile(_Section):
    name: str
    prompt: str = ""
    """A built-in prompt's name or the prompt's own text."""
    prompt_file: str = ""
    """A UTF-8 text file holding the prompt (relative to the profile's folder)."""
    greeting: str = ""
    """Spoken first, as soon as the caller's audio flows ("" = wait for the user)."""
    engine: str = "lite"
    """A name from the engine registry; its settings are the section of the same name."""
    tools: list[str] = []
    vad: VADSettings = VADSettings()
    endpointing: EndpointingSettings = EndpointingSettings()
    interruption: InterruptionSettings = InterruptionSettings()
    voice: VoiceSettings = VoiceSettings()
    lite: LiteEngineSettings = LiteEngineSettings()
    phi4mm: Phi4MMSettings = Phi4MMSettings()
    remote: RemoteSettings = RemoteSettings()
    context: ContextSettings = ContextSettings()
    vision: VisionSettings = VisionSettings()
    call: CallSettings = CallSettings()
    sip: SipSettings = SipSettings()
    console: ConsoleSettings = ConsoleSettings()
    addressing: AddressingSettings = AddressingSettings()
    mqtt: MqttSection = MqttSection()
    devices: dict[str, str] = {}
    """Device name → MQTT topic: the only devices the device tools may touch."""

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        return engine

    @property
    def engine_settings(self) -> LiteEngineSettings | Phi4MMSettings | RemoteSettings:
        settings: LiteEngineSettings | Phi4MMSettings | RemoteSettings = getattr(self, self.engine)
        return settings

    def with_model(self, model: str) -> Profile:
        """This profile with its engine's model replaced (``--model``)."""
        field = ENGINES[self.engine].model_setting
        settings = self.engine_settings.model_copy(update={field: model})
        return self.model_copy(update={self.engine: settings})

    def scripted_lines(self) -> tuple[str, ...]:
        """What the agent says or its model is told by script, which a reply must not recite:
        the greeting, the goodbye of a conversation with a time limit, and the tool reminder
        (the kiosk's 0.5B said it back as its answer to "Which timers are running?")."""
        goodbye = self.call.goodbye if self.call.max_s else ""
        lines = (self.greeting, goodbye, self.lite.tool_reminder)
        return tuple(line for line in lines if line)

    @model_validator(mode="after")
    def _one_prompt(self) -> Profile:
        if bool(self.prompt) == bool(self.prompt_file):
            raise ValueError("give either prompt (a built-in name or the text) or prompt_file")
        return self

    def instructions(self) -> str:
        """The system prompt's text; raises prompts.PromptError."""
        if self.prompt_file:
            return read_prompt_file(Path(self.prompt_file))
        return load_prompt(self.prompt)


def available_profiles() -> list[str]:
    folder = resources.files(__package__).joinpath("profiles")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # a name too long for the file system, say
        return False


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name or a TOML file by path."""
    if name_or_path in available_profiles():
        text = (
            resources.files(__package__)
            .joinpath(f"profiles/{name_or_path}.toml")
            .read_text("utf-8")
        )
        folder = Path.cwd()
    elif name_or_path.endswith(".toml") and _is_file(name_or_path):
        try:
            text = Path(name_or_path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ProfileError(f"profile {name_or_path!r} cannot be read: {e}") from None
        folder = Path(name_or_path).resolve().parent
    else:
        raise ProfileError(
            f"unknown profile {name_or_path!r} (built-in: {', '.join(available_profiles())}; "
            "or a path to a .toml file)"
        )
    try:
        values = tomllib.loads(text)
        if isinstance(values.get("prompt_file"), str) and values["prompt_file"]:
            values["prompt_file"] = str(folder / values["prompt_file"])
        return Profile.model_validate(values)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"profile {name_or_path!r} is not valid TOML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{loc}: " if loc else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ProfileError(f"profile {name_or_path!r}: {where}{message}") from None
