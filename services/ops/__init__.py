"""Operations tooling: deployment files generated from the code."""
