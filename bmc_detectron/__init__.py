"""bmc-detectron."""
