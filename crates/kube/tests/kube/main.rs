mod backup;
mod restore;
