"""The files workload (SharePoint Online / OneDrive): sites, files, versions, a recycle bin."""
