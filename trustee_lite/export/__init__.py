"""Exports of a trained policy for the tools people serve and chat with (issue: transformers
and vLLM folders first): what a run trained, found in the run record, written where a user
asked."""
