"""Small helpers shared by every part of the package (no detectron2 model code here)."""
