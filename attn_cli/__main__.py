"""`python -m attn_cli` (also what `torchrun -m attn_cli` runs)."""

from attn_cli.cli.main import main

if __name__ == "__main__":
    main()
