"""The console tools of twin-vit: vit-demo, vit-convert, vit-embed, vit-finetune. The only package,
besides tests and benchmarks, that drives both twins. Shared exit codes, argument types and the
progress reporter are in `vit_cli.common`."""
