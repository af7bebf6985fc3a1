"""The remote engine: the lite engine's ears and text pipeline, its answers from a model served
elsewhere over the OpenAI chat-completions protocol (vLLM, llama.cpp's server, Ollama…), on one
or several replicas."""
