"""The lite engine: faster-whisper for the ears, a small transformers LM for the answer."""
