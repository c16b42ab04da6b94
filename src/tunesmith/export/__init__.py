"""Export: a full merged model, a GGUF file for llama.cpp (gguf.py), an Ollama Modelfile (ollama.py), a model card.

Nothing is imported here, so `import tunesmith.export.<module>` loads only what that export needs.
"""
