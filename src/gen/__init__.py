"""Generative stage, one spine: prepare_chat (raw chats -> dataset) -> render (episode ->
segments) -> encode (segments -> ids; the one prompt builder) -> collate (batches) ->
model / task / train (engine) -> checkpoint (run-dir layout) -> sampling (generation).
`tiny` is an in-process model/tokenizer for tests and demos."""
