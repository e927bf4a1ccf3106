"""The walkthrough's pages, and in docs/tools the scripts that keep them honest."""
