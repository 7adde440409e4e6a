"""One model call, in the order it happens: the endpoint runs the steps; each module is one of them."""
