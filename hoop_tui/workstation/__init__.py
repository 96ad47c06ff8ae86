"""The Textual workstation: the approval queue and the recordings browser, attached to a running
gateway through the control API. The only package that imports Textual."""
