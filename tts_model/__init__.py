"""Text front end, audio features, data sets and the embedded corpus, the model, losses, inference."""
