"""Reading task data and turning it into model features."""
