"""One folder per code generation path, each registered in
:data:`edgekit.compiler.backend.BACKENDS` under its codegen name.

Every backend package exposes ``build`` (what the driver calls) and
``PASSES`` (its steps as data, :class:`~edgekit.compiler.backend.Pass`);
``docs/architecture.md`` says where a new one goes.
"""
