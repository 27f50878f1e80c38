"""Whole slides: a scanned smear read level by level, and where on it to count.

What goes here: the slide ``reader`` (:mod:`.reader`: pyramidal TIFF and SVS through tifffile,
tiffslide / OpenSlide as optional backends; the third-party slide libraries are imported only
here), the ``counting zone`` (:mod:`.zone`: tissue mask, the monolayer zone, the fields scored)
and the slide as a ``field source`` (:mod:`.source`: the fields' pixels, their order, the
overview picture). Slides feed the count through one field-source interface
(:mod:`bmc_detectron.pipeline.field_source`): the count
(:func:`~bmc_detectron.pipeline.slide_run.run_slide_count`) reads fields from a slide the way
it reads a folder of images. ``pip install .[wsi]`` installs the readers.

Import rules:

* it may import the floors below it (``data``, ``structures``, ``smear``, ``utils``) and, of
  ``pipeline``, the field-source interface and the file pixel-size reader
  (:func:`~bmc_detectron.pipeline.pixel_size.tiff_pixel_size`); ``pipeline`` never imports
  ``slides`` (the tools hand it a field source);
* never ``serve``, ``tools``, ``batch``, ``cases`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
