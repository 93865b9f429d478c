mod restore;
