mod backup;
mod openshift;
mod restore;
