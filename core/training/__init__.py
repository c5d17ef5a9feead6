"""Training a ControlNet on xBD pre/post pairs (docs/training.md).

    options.py   TrainOptions: every setting, the authors' recipe as defaults
    data.py      the pairs, their captions and metadata, the dataset, the upstream export
    models.py    the frozen base and the ControlNet it starts from
    loop.py      the accelerate loop: steps, validation, checkpoints, resume
    service.py   TrainingService: train here, in the background, status, stop, export
"""
