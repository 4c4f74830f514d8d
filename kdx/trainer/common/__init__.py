"""What both training stages share: no module here is specific to one stage."""
