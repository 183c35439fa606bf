"""apdl's screens: thin views that parse, check the permission, call one service, commit and render."""
