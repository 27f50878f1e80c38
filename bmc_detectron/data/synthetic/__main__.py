"""``python -m bmc_detectron.data.synthetic``: write the bmc_synth train and test splits."""

from bmc_detectron.data.synthetic.bmc_synth import main

if __name__ == "__main__":
    main()
