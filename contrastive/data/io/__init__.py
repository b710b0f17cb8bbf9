"""Reading image files: folders of classes, decoding, and the decoded-image cache."""
