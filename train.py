"""Train, validate or test a complaint classifier from YAML experiments.

python train.py fit --config configs/demo.yaml
python train.py fit --config configs/demo.yaml --config configs/text_only.yaml --trainer.max_epochs 5
"""

from pipeline.training.cli import main

if __name__ == "__main__":
    main()
