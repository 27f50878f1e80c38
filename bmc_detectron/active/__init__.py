"""Active learning: which unlabelled images an expert labels next, and merging corrections.

* :mod:`.scores`: per-box class uncertainty, per-image aggregation, view consistency;
* :mod:`.diversity`: k-centre and class-balanced batch selection;
* :mod:`.acquire`: running the detector (and classifier) over a pool, with a cache;
* :mod:`.ranking`: scores -> ranked list and chosen batch;
* :mod:`.formats`: Label Studio / LabelMe pre-annotations and Label Studio import;
* :mod:`.merge`: validated merge of corrections into a COCO training set;
* :mod:`.simulation`, :mod:`.simulation_report`: does the loop pay? Rounds of acquisition and
  retraining on a fully labelled pool, per strategy and seed, and their results page.
"""
