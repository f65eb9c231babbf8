# CPack .deb packaging is configured by issue 7.
