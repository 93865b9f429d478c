mod backup;
mod inventory;
mod openshift;
mod restore;
