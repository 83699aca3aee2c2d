"""Training, fine-tuning and the data behind them (never imported by ``model/``, ``inference/``
or ``widget/``; the widget reaches training only through ``finetune_session.py``)."""
