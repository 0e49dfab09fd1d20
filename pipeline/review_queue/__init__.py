"""Reviewers in the loop: the rows that need review go to Label Studio, and what the reviewers decide comes
back as a labelled archive to train on (``python -m pipeline.review_queue``)."""
