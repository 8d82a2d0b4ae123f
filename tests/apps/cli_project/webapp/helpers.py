def greeting():
    return "from the project"
