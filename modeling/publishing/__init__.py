"""Publishing a study's models: the model card, the folder pushed to the Hub, and the Gradio demo."""
