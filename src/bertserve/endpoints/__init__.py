"""Front ends: translate a wire protocol into engine calls, and errors into status codes."""
