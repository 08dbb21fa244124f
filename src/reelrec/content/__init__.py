"""Item content: text encoders, item texts, behaviour-only embeddings, embedding files."""
