"""Whole slides (a room named now, filled later).

What goes here: the slide ``reader`` (whole-slide images and stitched scans behind one reader
interface, with the third-party slide libraries imported only here), the ``counting zone`` (where
on the slide the cells are counted: the thin, evenly spread part of the smear) and the
``fields`` (cutting the zone into the fields the count reads). Slides feed the count through one
field-source interface: the count reads fields from a slide the way it reads a folder of images.

Import rules:

* it may import the floors below it (``data``, ``structures``, ``smear``, ``utils``) and the
  field-source interface of ``pipeline``; ``pipeline`` never imports ``slides`` (the tools hand
  it a field source);
* never ``serve``, ``tools``, ``batch``, ``cases`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
