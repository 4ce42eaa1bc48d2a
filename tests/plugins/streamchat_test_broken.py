raise ImportError("this plug-in is broken on purpose")
